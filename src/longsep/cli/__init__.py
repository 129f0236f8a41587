"""Entry-point logic behind ``train.py``, ``separate.py`` and ``evaluate.py``."""
