"""What turns a photo into tags, features and a topic vector: the backbone and its batches
(``tagger``, ``images``, ``loader``), custom heads, the label vocabulary and the topic model.

Both sides run it: the indexer for every photo, the API for query by photo (``recommender.embed``).
"""
