"""A local web viewer: open a scan or a run, segment it with an exported model, read and download results.

``python -m tfmedseg.viewer --root DIR [--models saved_models/] [--host 127.0.0.1] [--port 8765]``
(console script ``tfmedseg-viewer``; needs the ``viewer`` extra: ``pip install tfmedseg[viewer]``).
The server (:mod:`tfmedseg.viewer.app`, Starlette on uvicorn) only reads under ``--root``
(:mod:`tfmedseg.viewer.files`), lists the exported models under ``--models``
(:mod:`tfmedseg.viewer.models`), runs segmentations one at a time through the functions of
:mod:`tfmedseg.predict` (:mod:`tfmedseg.viewer.jobs`) and serves the page from ``static/`` (plain
JavaScript and canvas, no CDN). See ``docs/viewer.md``.
"""
