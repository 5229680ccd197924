"""The store's schema revisions, in order; ``cellgate upgrade-db`` applies them."""
