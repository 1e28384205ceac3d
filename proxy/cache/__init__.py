"""Cache storages behind one small interface, and the policies that decide lifetimes."""
