"""The central station: receives every bed's HL7 reports (``server``), keeps them in central.db
(``store``) and shows all beds at once (``overview``, in a terminal or a browser). See docs/central.md."""
