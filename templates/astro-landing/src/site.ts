// The values rdev filled in when this project was created from the astro-landing template.
// Edit them here; every page reads them from this one file.
export const site = {
  title: "{{ title }}",
  tagline: "{{ tagline }}",
  accentColor: "{{ accent_color }}",
  cta: { text: "{{ cta_text }}", url: "{{ cta_url }}" },
};
