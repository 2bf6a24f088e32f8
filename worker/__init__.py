"""regionfarm workers: the render engine (worker.render) and, later, the queue side."""
