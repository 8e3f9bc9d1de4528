"""Observing the fleet: SageMaker's metrics recorded into the shared store, the backlog
sampled from it, and the CloudWatch operations that read them back (DESIGN.md, "A
fleet": signals derive from the store)."""
