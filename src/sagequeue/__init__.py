"""sagequeue: self-hosted, wire-compatible Amazon SageMaker Asynchronous Inference."""

__version__ = "0.1.0"
