"""Acting on runs from the login node: cancel, requeue, clone."""
