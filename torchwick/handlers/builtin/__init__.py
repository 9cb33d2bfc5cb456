"""torchwick's default handlers, selectable by bare name in the manifest.

``image_classifier``, ``image_segmenter``, ``object_detector``, ``text_classifier`` (and
``base_handler`` from ``torchwick.handlers.base_handler``). ``vision`` and ``text`` hold the
shared ``VisionHandler``/``TextHandler`` bases. None of them needs torchvision.
"""
