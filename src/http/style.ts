import type { FastifyInstance } from 'fastify';

/**
 * The default SMART style (SMART App Launch 2.2 §Styling): the `smart_style_url` of launches that do not
 * bring their own, so an app can match the look of the pages that launched it.
 */
export const SMART_STYLE = {
  color_background: '#f6f8fa',
  color_error: '#b42318',
  color_highlight: '#0b5cad',
  color_modal_backdrop: 'rgba(27, 31, 36, 0.5)',
  color_success: '#1a7f37',
  color_text: '#1b1f24',
  dim_border_radius: '8px',
  dim_font_size: '16px',
  dim_spacing_size: '16px',
  font_family_body: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
  font_family_heading: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
};

export async function styleRoutes(app: FastifyInstance): Promise<void> {
  const body = JSON.stringify(SMART_STYLE);
  app.get('/smart-style.json', async (_request, reply) => {
    void reply.header('access-control-allow-origin', '*').header('cache-control', 'public, max-age=86400').type('application/json; charset=utf-8');
    return body;
  });
}
