"""Integrations with web frameworks, each an optional extra.

- :mod:`courier.contrib.django`: ``pip install "courier-bus[django]"``
- :mod:`courier.contrib.flask`: ``pip install "courier-bus[flask]"``
- :mod:`courier.contrib.fastapi`: ``pip install "courier-bus[fastapi]"``

The core never imports these modules; each imports its own framework.
"""
