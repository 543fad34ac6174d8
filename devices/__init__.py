"""Serial acquisition for the bedside: drivers for ECG boards, their wire protocols, a simulator.

Protocol classes (:mod:`devices.cyton`, :mod:`devices.ads1298`) turn bytes into frames and do no
I/O; :mod:`devices.sequencer` turns frames into gap-aware sample blocks and events;
:mod:`devices.driver` wires both to a port opened with pyserial's ``serial_for_url``, and
:mod:`devices.identity` decides whether a port is (still) the board: valid frames, its serial, and
whether the driver may write there before they arrive.
:mod:`devices.simulator` streams a record or a synthetic ECG as a board would, with faults from
:mod:`devices.faults`. Nothing here imports PyTorch.
"""

__version__ = "0.1.0"
