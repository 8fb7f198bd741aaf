"""Build zerosearch and its compiled ops (zerosearch._C).

A CppExtension (OpenMP) is always built. When the installed torch has CUDA (torch.version.cuda)
the .cu kernels are added and the extension becomes a CUDAExtension with -DWITH_CUDA.
ZEROSEARCH_CUDA=0/1 overrides the detection.
"""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    flag = os.environ.get("ZEROSEARCH_CUDA")
    if flag is not None:
        return flag == "1"
    return torch.version.cuda is not None


def _extension():
    cpp = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    kwargs = dict(include_dirs=[os.path.join(HERE, "csrc")], extra_link_args=["-fopenmp"])
    if _want_cuda():
        cu = sorted(glob.glob("csrc/cuda/*.cu"))
        return CUDAExtension(
            "zerosearch._C",
            cpp + cu,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17"]},
            **kwargs,
        )
    return CppExtension("zerosearch._C", cpp, extra_compile_args={"cxx": cxx}, **kwargs)


setup(
    name="zerosearch",
    version="0.1.0",
    description="RL for search agents without a search engine: an LLM simulates the search results.",
    packages=find_packages(include=["zerosearch", "zerosearch.*"]) + ["zerosearch.kernels"],
    package_dir={"zerosearch.kernels": "kernels"},
    package_data={"zerosearch": ["configs/*.yaml", "collect/*.txt"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=4.56",  # packed sequences: sequence starts read from position_ids
        "tokenizers>=0.20",
        "safetensors",
        "bm25s",
        "numpy",
        "pyyaml",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "triton": ["triton>=3.0"],
        "gpu": ["flash-attn", "xformers"],
        "dev": ["pytest", "hypothesis", "ruff", "triton>=3.0"],
        "bench": ["liger-kernel"],  # the peer of benchmarks/bench_masked_pg_loss.py
    },
    entry_points={"console_scripts": ["zerosearch=zerosearch.cli:main"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
