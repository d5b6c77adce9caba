//! The unit configuration file: parsing, validation with errors that name the field
