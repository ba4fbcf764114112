"""Applications: thin command-line programs over the library (never imported by it).

=====================  ==========================================================================
``demo``               any video -> person boxes -> `stad.engine.inference.Predictor` -> annotated MP4 + CSV
``stream``             a live / piped stream (file, rtsp/http, camera, raw stdin) -> the same, rows as they come
``demo_pipeline``      ``make demo``: the whole two-stage pipeline on the toy data, stage by stage
``report_demo``        the demo's report (Markdown, JSON, PNG) from the pipeline's outputs
``visualize``          overlays (boxes, person ids, actions) and the MP4 writer
``tracking``           the demo's greedy IoU tracker (person ids across keyframes)
``export``             the whole action model -> ONNX / OpenVINO IR / TorchScript + its preset (`stad.engine.action_export`)
=====================  ==========================================================================

``python -m stad.demo``, ``python -m stad.stream``, ``python -m stad.demo_pipeline``, ``python -m stad.report_demo`` and
``python -m stad.export`` are aliases
of ``python -m stad.apps.<name>``. The library (`stad.data`, `stad.models`, `stad.engine`,
`stad.evaluation`, `detect`, ...) never imports this package (tests/test_import_contract.py).
"""
