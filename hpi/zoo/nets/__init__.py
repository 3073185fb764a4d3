"""Network definitions of the zoo's non-CNN-core families (these modules import Paddle).

The family modules next to this package (``hpi/zoo/convnext.py``, ``hpi/zoo/swin.py``, ...) only declare their
``MODELS`` catalogue, so that listing the zoo never imports Paddle; their ``build`` functions import the
network from here.
"""
