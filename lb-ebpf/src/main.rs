#![no_std]
#![no_main]
//! (in progress)
