"""Which backend runs a model, and why: the explicit / normal / measured / static choice and measured selection.

One job per module, imported forward only:

* :mod:`~hpi.selection.candidates`: the ways to run a model here (backend x precision x settings), threads filled.
* :mod:`~hpi.selection.gate`: the accuracy gate, a candidate's outputs against the fp32 reference (scores and
  rankings; for detectors, box agreement by IoU).
* :mod:`~hpi.selection.record`: the typed :class:`~hpi.selection.record.SelectionRecord` and what it depends on.
* :mod:`~hpi.selection.measure`: build, run and time every candidate (each in its own process), pick the winner.
* :mod:`~hpi.selection.detection`: a detector's reference inputs and post-NMS boxes for the measurement (imported
  by :mod:`~hpi.selection.measure` when first used: it needs the detector model, which imports the choice).
* :mod:`~hpi.selection.decision`: the cached decision, measured again when the model, a library or the policy
  changes.
* :mod:`~hpi.selection.choice`: the one place the choice is resolved (:func:`~hpi.selection.choice.resolve_choice`).
"""
