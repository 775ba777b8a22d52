"""The Celery worker. The worker process never imports TensorFlow: each job runs in a
fresh child process (`imgclf.worker.job_process`), so there is no fork after TF is
loaded and no memory carried from one job to the next."""
