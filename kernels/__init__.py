"""Triton kernels of zerosearch, shipped as ``zerosearch.kernels``.

Each kernel module keeps a plain PyTorch reference beside the kernel. Importing this package does not
import Triton; kernel modules do, so set TRITON_INTERPRET=1 before importing them to run on a CPU.
"""
