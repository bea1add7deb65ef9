"""What the chaos run, the benchmarks and the tests share; neither control plane nor worker.

The chaos driver and checker (``chaos/``), the sample custom code they check results by and
the hostile inputs of issue 11. ``tasks.py``'s ``chaos`` and ``bench`` tasks, ``bench/`` and
``tests/`` import it from the checkout: it is left out of the wheel (pyproject.toml) and of the
worker image (the Dockerfile copies ``worker/`` alone).
"""
