# servectl image: serves a spec given at run time, e.g.
#   docker build -t servectl .
#   docker run -p 8000:8000 -v $PWD/configs:/specs servectl /specs/quickstart.yaml server.host=0.0.0.0
# Add extras at build time: docker build --build-arg EXTRAS=pytorch -t servectl-torch .
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 SERVECTL_PORT=8000

RUN useradd --create-home --uid 10001 servectl
WORKDIR /app
COPY pyproject.toml README.md ./
COPY servectl ./servectl
COPY handlers ./handlers
COPY configs ./configs
RUN pip install --no-compile ".${EXTRAS:+[$EXTRAS]}"

USER servectl
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['SERVECTL_PORT'], timeout=2)"
ENTRYPOINT ["servectl", "serve"]
CMD ["configs/quickstart.yaml", "server.host=0.0.0.0"]
