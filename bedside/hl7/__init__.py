"""HL7 v2.6 messages from the bed (IHE PCD-01 observations, PCD-04 alarms), MLLP transport and the outbox.

``model`` holds the reports (plain dataclasses), ``messages`` builds and parses them (hl7apy), ``mllp``
frames them on TCP, ``outbox`` writes them in the log's transaction and ``sender`` delivers them.
"""
