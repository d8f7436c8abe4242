"""optreg's benchmarks: each ``bench_*.py`` runs optreg and its peer side by side and reports ratios."""
