from setuptools import setup

setup(
    name="fastrec",
    version="0.1.0",
    description="Fast, measured training of transformer sequential recommenders",
    python_requires=">=3.10",
    packages=["fastrec", "fastrec.data", "fastrec.kernels"],
    # The Triton kernels live in the top-level kernels/ folder and install as
    # fastrec.kernels, so no top-level module named "kernels" is ever installed.
    package_dir={"fastrec": "fastrec", "fastrec.kernels": "kernels"},
    install_requires=[
        # CPU machines: pin torch==2.13.0 on the pip command line (see README).
        "torch>=2.4",
        "triton>=3.2",
        "numpy>=1.26",
        "pyarrow>=15",
        "pandas>=2.1",
        "pyyaml>=6",
        "tqdm>=4.66",
        "tensorboard>=2.15",
        "matplotlib>=3.8",
        "nvtx>=0.2.10",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-benchmark>=4",
            "hypothesis>=6.100",
            "scikit-learn>=1.4",
            "ruff>=0.5",
        ]
    },
)
