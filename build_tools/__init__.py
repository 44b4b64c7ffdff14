"""Build-time tools: AOT-compile the Triton kernels and render the C launchers (never imported at run time)."""
