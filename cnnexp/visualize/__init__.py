"""`cnnexp visualize`: what a trained run has learned (first-layer filters, feature maps,
activation maximization, saliency, mistakes), as figures and an index.html in its visualize/ folder."""
