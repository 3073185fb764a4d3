"""hpi's Triton Python-backend models, imported by the repository's ``model.py`` files from the installed hpi.

Each exported Python model's ``<version>/model.py`` is one import line naming a ``TritonPythonModel`` class here;
the server's Python environment has hpi installed (``requirements.txt`` beside the repository), so decoding,
resizing and top-k run hpi's own code. These modules import ``triton_python_backend_utils``, which only exists
inside Triton: hpi itself never imports them.
"""

