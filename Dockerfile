# One image for every ELM Lab service: the dashboard (`elmlab up`), a worker (`elmlab worker`),
# the recorder (`elmlab recorder`) and Flower (`celery ... flower`), chosen by the command.
#
#   docker build -t elmlab .                                  # CPU PyTorch
#   docker build -t elmlab:cuda --build-arg TORCH=cuda .      # CUDA PyTorch, for GPU workers
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# cpu: PyTorch's CPU-only wheel (small); cuda: the default wheel, built with CUDA.
ARG TORCH=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/elmlab
# g++ builds the native time loops (elm_core/native) on first use; without it runs use the Python loops
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
COPY requirements.txt ./
RUN if [ "$TORCH" = "cpu" ]; then pip install torch==2.13.0 --index-url "$TORCH_CPU_INDEX"; fi \
 && pip install -r requirements.txt

COPY pyproject.toml README.md ./
COPY elm_core ./elm_core
COPY workers ./workers
COPY app ./app
COPY elmlab ./elmlab
COPY benchmarks ./benchmarks
RUN pip install --no-deps . && useradd --create-home --uid 1000 elmlab \
 && mkdir -p /data/elmlab /data/datasets && chown -R elmlab:elmlab /data

# ELMLAB_HOME        store, embedded broker files and logs (a volume: results survive the container)
# ELMLAB_DATA_DIR    data sets: enwik8 / enwik8.zip, shd_train.h5 + shd_test.h5 (a volume, read-only is fine)
# ELMLAB_BROKER_URL  unset = embedded on-disk broker (one container); redis://... = distributed
# ELMLAB_READ_ONLY   1 = publish results only: no queue, cancel or retry
# ELMLAB_FLOWER_URL  where the Runs page links to Flower
ENV ELMLAB_HOME=/data/elmlab \
    ELMLAB_DATA_DIR=/data/datasets
VOLUME ["/data/elmlab", "/data/datasets"]

USER elmlab
EXPOSE 8501 5555
ENTRYPOINT ["elmlab"]
CMD ["up", "--host", "0.0.0.0", "--no-browser"]
