"""Small periodic loops that keep the table healthy; the leader runs most of them."""
