"""Container images of the compose stack built without an image registry (`k2 images build --local-bases`).

See k2_ops/images/build.py and docker/README.md ("Images built from Debian packages").
"""
