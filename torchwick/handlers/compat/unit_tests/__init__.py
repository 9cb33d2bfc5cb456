"""``ts.torch_handler.unit_tests``: TorchServe's helpers for handler unit tests.

``mock_context.MockContext`` builds a context by hand (no server, no worker);
``model_dir.copy_files``/``download_model`` lay out a model directory;
``base_model.ArgmaxModel``/``save_pt_file`` are the tiny model TorchServe's own tests use.
"""
