"""Dispatch: the worker that runs model instances and feeds them from the queue."""
