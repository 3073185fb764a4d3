"""Model types (:func:`hpi.create_model` picks one by the model's task): one module per task kind over the shared predict loop of :mod:`hpi.models.base`.

* :mod:`hpi.models.classification`: :class:`~hpi.models.classification.Predictor` (classification, embedding).
* :mod:`hpi.models.detection`: :class:`~hpi.models.detection.Detector` (PaddleDetection-format detectors), over :mod:`hpi.models.detector_ops` (the export's ``inference.yml``, image preparation,
  output decoding and NMS), which measured selection also uses.
"""
