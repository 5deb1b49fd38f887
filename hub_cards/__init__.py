"""Model-card templates and the card data that fills them."""
