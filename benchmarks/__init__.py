"""tokenflow's benchmarks: ``python -m benchmarks`` from the repository root.

Each benchmark group is a module with a ``run(settings, report)`` function,
registered in :mod:`benchmarks.__main__`. The timing machinery that every
group shares (interleaved rounds, batch calibration, medians and noise) lives
in :mod:`benchmarks._harness`, so that all groups measure the same way.
"""
