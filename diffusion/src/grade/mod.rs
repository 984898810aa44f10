pub mod ddpm_math;
pub mod question;
