"""Training stage (torch): data, devices, backbone, adaptation methods, loop, artifacts."""
