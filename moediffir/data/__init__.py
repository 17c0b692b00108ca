"""The CIR benchmark of paper §3.5: tasks, dataset folders, the parallel resumable builder and its manifest.

Import what you need from the submodules (no import-time work here)::

    from moediffir.data.tasks import seen_tasks, unseen_tasks, select_tasks
    from moediffir.data.builder import build_benchmark
    from moediffir.data.manifest import read_manifest, verify_manifest
    from moediffir.data.dataset_folders import check_dataset, import_dataset
"""
