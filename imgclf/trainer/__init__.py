"""The trainer: data, the one preprocessing function, the model, training, report, export.

Importing this package imports TensorFlow lazily through its submodules; the
server never imports it.
"""
