"""The secure band protocols between bureau and bank, and the records an application travels as."""
