# The laptop-sized run, written once: the docs include it, benchmarks/laptop_run.py runs it, and
# tests/test_docs.py checks that README.md quotes the `laptop` command verbatim.
# --8<-- [start:laptop]
dvc exp run -S budget=laptop -S dataset=mnist
# --8<-- [end:laptop]
# On Fashion-MNIST, from a local copy (Debian's dataset-fashion-mnist package):
# --8<-- [start:mirror]
export GRUTUNE_DATA_MIRROR=/usr/share/datasets/fashion-mnist
dvc exp run -S budget=laptop -S dataset=fashion_mnist
# --8<-- [end:mirror]
