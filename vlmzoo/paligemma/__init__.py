"""PaliGemma and PaliGemma 2: the zoo's native family, its assembly, checkpoint layout and processor.

The shared parts (components, generation, checkpoint files, image preprocessing, tasks) live outside
this folder; a second family (`vlmzoo.siglip`) has the same shape.
"""
