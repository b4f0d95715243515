"""Session-wide test set-up, for kvae's tests and the example plugins' tests alike."""

# tox runs the tests with pytest-xdist's --dist loadfile: each worker gets whole files, in
# collection order, and CI has 2 cores. Collected alphabetically, test_resume.py (80 s on CI)
# started late and ran on alone while the other workers were idle. The longest files go first
# (the longest-processing-time rule), the rest keep their order. Times: --durations on CI.
_LONGEST_FIRST = (
    "test_cli.py",
    "test_distribute.py",
    "test_model.py",
    "test_families.py",
    "test_resume.py",
    "test_components.py",
    "test_conditional.py",
    "test_tables.py",
    "test_images.py",
    "test_export.py",
    "test_cli_edges.py",
    "test_edges_ais.py",
    "test_benchmark_peers.py",
    "test_loglik.py",
    "test_nan.py",
    "test_plugins.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
