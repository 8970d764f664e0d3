"""What runs inside a worker process: node, producers, executor, completer, heartbeat."""
