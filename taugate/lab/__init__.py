"""What serves the paper and the evidence: the experiment's tables and figure, the sparsity
sweep, the peers comparison, the report and the benchmark plots. Built on training and
exporting; nothing in the pipeline imports it."""
