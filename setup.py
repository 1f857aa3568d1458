"""dfl-jax: Decoupled Feature Learning for 3D interacting-hand pose, in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="dfl-jax",
    version="0.1.0",
    description="DFL (Decoupling Heterogeneous Features for Robust 3D Interacting Hand Poses "
                "Estimation) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # configs/ too: its files import their base (configs.default), which console scripts, run
    # from any folder, can then find.
    packages=find_packages(include=["dfl_jax", "dfl_jax.*", "input_pipeline",
                                    "input_pipeline.*", "configs"]),
    # Shipped files: the tiny encoder of configs/tiny.py (dfl_jax/weights/encoder_file.py) and
    # the GPU targets of dfl_jax/tools/aot.py.
    package_data={"dfl_jax": ["assets/*.npz", "assets/gpu_targets/*.txtpb"]},
    # The same commands as `python main.py` and `python -m ...` (README, "Commands").
    entry_points={"console_scripts": [
        "dfl-train=dfl_jax.training.cli:command",
        "dfl-evaluate=dfl_jax.evaluation.cli:command",
        "dfl-predict=dfl_jax.serving.predict:command",
        "dfl-export=dfl_jax.serving.export:command",
        "dfl-bench=dfl_jax.tools.bench:command",
        "dfl-profile=dfl_jax.tools.profile:command",
        "dfl-gpu-report=dfl_jax.tools.gpu_report:command",
        "dfl-aot=dfl_jax.tools.aot:command",
        "dfl-doctor=dfl_jax.tools.doctor:command",
        "dfl-summary=dfl_jax.tools.summary:command",
        "dfl-convert-resnet=dfl_jax.weights.backbone_file:command",
        "dfl-pretrained-encoder=dfl_jax.weights.encoder_export:command",
        "dfl-correct-pose=dfl_jax.evaluation.correction:command",
        "dfl-crossdomain=dfl_jax.training.crossdomain:command",
        "dfl-shapes=dfl_jax.training.shapes:command",
        "dfl-build=input_pipeline.dataset_build:command",
        "dfl-synthetic=input_pipeline.synthetic_render:command",
        "dfl-pipeline-bench=input_pipeline.throughput:command",
    ]},
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "tensorboard",  # clu's TensorBoard writer
        "numpy>=1.26",
        "opencv-python-headless>=4.9",
        "scikit-image>=0.22",  # marching cubes of the synthetic hands' shapes
        "safetensors>=0.4",
        "plyfile>=1.0",  # HIC's hand meshes (dfl_jax/evaluation/hic.py)
        "tensorflow-cpu>=2.16; platform_machine=='x86_64'",
        "tensorflow>=2.16; platform_machine!='x86_64'",
        "tensorflow-datasets>=4.9.6",
        "absl-py",
        "matplotlib",
        "importlib_resources",  # tensorflow-datasets needs it to prepare a builder
    ],
    extras_require={
        # torch is never a dependency of the package; tests install the CPU build themselves.
        "test": ["pytest>=8", "pytest-xdist>=3",
                 "nbclient", "nbformat", "ipykernel"],  # executing colab/ notebooks
        # Optional hand detector of dfl_jax.predict (MediaPipe; model file via --detector_model).
        "detector": ["mediapipe"],
        # Accelerators (README, "Hardware"; check with `python -m dfl_jax.doctor`).
        # Volta (Titan V, V100; sm_70), which CUDA 13 dropped: CUDA 12 with the last cuDNN that
        # still has Volta kernels.
        "cuda12": ["jax[cuda12]", "nvidia-cudnn-cu12==9.10.2.21"],
        "cuda13": ["jax[cuda13]"],  # Turing (sm_75) and newer
        "tpu": ["jax[tpu]"],
    },
    license="Apache-2.0",
)
