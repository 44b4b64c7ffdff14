"""Build-time tools: AOT-compile the Triton kernels, render the C launchers (never imported at run time)."""
