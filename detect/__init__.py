"""First stage of the pipeline: YOLOv8 person proposals on keyframes."""
