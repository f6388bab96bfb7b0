"""What turns a photo into tags, features and a topic vector: the tagger and its batches
(``tagger``, ``prefetch``), the runtimes that run the backbone (``runtime``: OpenVINO or ONNX
Runtime over the ``exported`` files, no torch; ``backbone``, ``images``, ``loader``: torch, the
reference and the GPU path; ``onnx_export``), custom heads, the label vocabulary and the topic model.

Both sides run it: the indexer for every photo, the API for query by photo (``recommender.embed``).
"""
