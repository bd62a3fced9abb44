// The values rdev filled in when this project was created from the astro-landing template.
// Edit them here; every page reads them from this one file.
export const site = {
  title: "Acme Rockets",
  tagline: "Built and deployed by rdev.",
  accentColor: "#ff5500",
  cta: { text: "Get started", url: "#features" },
};
