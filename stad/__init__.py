"""Second stage of the pipeline: actor-context action classification on person proposals.

Importing `stad` (and `stad.structures`, `stad.data.formats`, `stad.evaluation`) never imports
torch, so the evaluator and the format tools start fast.
"""
__version__ = "0.1.0"
