"""imgclf: fine-tune ResNet-50 image classifiers and serve them.

The preprocessing used in training is saved inside every exported model, so the
server never re-implements it. See DESIGN.md for the artifact contract.
"""

__version__ = "0.1.0"
