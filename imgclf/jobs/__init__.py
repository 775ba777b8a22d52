"""Training jobs: the job document, where job records live, and submitting to the queue.

Nothing here imports TensorFlow: the CLI, the server and the Python client submit
jobs without loading the trainer.
"""
