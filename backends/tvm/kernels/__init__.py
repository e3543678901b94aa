"""Our own TE/TIR kernels, for ops Relax lacks or where we want exact reference semantics."""
